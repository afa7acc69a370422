"""Compact proposals and announcements: blocks on the wire as tx hashes.

Spec: docs/spec/consensus.md §2b. :class:`CompactRelay` is the part of the engine that sends
own proposals and decisions in the application's compact form, rebuilds received ones from the
mempool (then handled exactly like full ones: block id, proposer field, full validation), asks
a proposer for its full proposal when txs stay missing, and answers such requests. It relies on
the engine for the consensus path (:meth:`_on_consensus`), deduplication and the future buffer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Protocol, runtime_checkable

from ledger.consensus import wire
from ledger.consensus.errors import MessageError
from ledger.consensus.messages import Proposal, Step, Vote
from ledger.consensus.sync import BlockFollower
from ledger.keys import sha256

MAX_PENDING_COMPACT = 8
"""Compact proposals kept while some of their txs are missing here [count]."""


@runtime_checkable
class CompactBlocks(Protocol):
    """Optional application capability: a compact wire form of blocks (docs/spec/consensus.md
    §2b). The ledger sends a proposal's txs as hashes; receivers rebuild the block from the
    txs they already admitted, so each tx crosses a validator's link once, not twice."""

    def compact_block(self, block: bytes) -> bytes | None:
        """The compact form of ``block`` (None: send it whole)."""
        ...

    def expand_block(self, compact: bytes) -> bytes | None:
        """The block bytes rebuilt from a compact form; None while some of its txs are not
        here. Raises :class:`MessageError` (``malformed``) on a broken compact form."""
        ...


class CompactRelay(BlockFollower):
    """Compact wire forms on top of block following; the engine supplies the hooks below."""

    _seen: OrderedDict[bytes, None]
    _own: dict[tuple[int, int, int], bytes]

    @property
    def is_validator(self) -> bool:
        raise NotImplementedError

    def _on_consensus(self, msg: Vote | Proposal, payload: bytes) -> None:
        raise NotImplementedError

    def _buffer_future(self, height: int, payload: bytes, sender: str) -> None:
        raise NotImplementedError

    def _remember(self, digest: bytes) -> None:
        raise NotImplementedError

    def _init_compact(self, app: object, enabled: bool) -> None:
        self._compact = app if enabled and isinstance(app, CompactBlocks) else None
        self._own_wire: dict[tuple[int, int, int], bytes] = {}
        self._pending_compact: dict[bytes, tuple[wire.CompactProposal, str]] = {}
        self._answered: dict[tuple[str, int], int] = {}
        self._latest_compact: tuple[int, bytes] | None = None

    def _reset_compact(self) -> None:
        """A new height: nothing of the old one is pending, answered or cached."""
        self._own_wire.clear()
        self._pending_compact.clear()
        self._answered.clear()

    def _on_compact(self, msg: wire.CompactProposal, payload: bytes, sender: str) -> None:
        """A proposal with its block in compact form: check its signature, rebuild the block
        from local txs and go on as with a full proposal (docs/spec/consensus.md §2b)."""
        p = msg.proposal
        if not self.is_validator or self._compact is None:
            self.stats["not_validating" if not self.is_validator else "compact_unsupported"] += 1
            return
        if p.height < self.height:
            self.stats["old_height"] += 1
            return
        if p.proposer not in self.valset:
            self.stats["not_validator"] += 1
            return
        try:
            p.verify_signature(self._config.chain_id)
        except MessageError as exc:
            self.stats[exc.reason] += 1
            return
        if p.height > self.height:
            self._buffer_future(p.height, payload, sender)
            self.note_peer_height(p.height - 1)
            return
        self._expand(msg, sha256(payload), sender)

    def _expand(self, msg: wire.CompactProposal, key: bytes, sender: str) -> bool:
        """Rebuild and feed a compact proposal; False while txs are missing (it then waits,
        and the full proposal is asked for after ``compact_wait_ms``)."""
        assert self._compact is not None
        try:
            block = self._compact.expand_block(msg.compact)
        except MessageError as exc:
            self.stats[exc.reason] += 1
            return True
        if block is None:
            if key not in self._pending_compact:
                self.stats["compact_missing"] += 1
                if len(self._pending_compact) < MAX_PENDING_COMPACT:
                    self._pending_compact[key] = (msg, sender)
                    height = self.height
                    self._clock.call_later(
                        self._config.compact_wait_ms, lambda: self._ask_full(key, height)
                    )
            return False
        self._pending_compact.pop(key, None)
        full = replace(msg.proposal, block=block)
        full_payload = wire.encode_proposal(self._config.chain_id, full)
        digest = sha256(full_payload)
        if digest in self._seen:  # the full proposal came first (asked for, or re-sent)
            self.stats["duplicate"] += 1
            return True
        self._remember(digest)
        self.stats["compact_rebuilt"] += 1
        self._on_consensus(full, full_payload)
        return True

    def _on_compact_block(self, msg: wire.CompactAnnouncement) -> None:
        """A decision announced in compact form: for a decided height only the fork check
        (by the commit's hash, nothing to rebuild); else rebuild it from the mempool and
        follow it like a full announcement, or ask for blocks by sync if txs are missing."""
        commit = msg.commit
        if commit.height < self.height:
            self._fork_if_conflicting(commit, commit.block_hash)
            return
        block = None
        if self._compact is not None:
            try:
                block = self._compact.expand_block(msg.compact)
            except MessageError as exc:
                self.stats[exc.reason] += 1
                return
        if block is None:
            self.stats["compact_block_missing"] += 1
            self.note_peer_height(commit.height)
            return
        self.on_block(wire.BlockAnnouncement(block, commit))

    def announce_latest(self) -> None:
        """Re-announce the last decided block (re-publication, helps a peer one height
        behind) in compact form when the application has one: a full block every period
        would cost every link the block's bytes again (docs/spec/consensus.md §2b)."""
        commit = self.last_commit
        if self._compact is None or commit is None:
            super().announce_latest()
            return
        if self._latest_compact is None or self._latest_compact[0] != commit.height:
            block = self.last_block or self.app.block(self.height - 1)
            compact = self._compact.compact_block(block) if block is not None else None
            if compact is None:
                super().announce_latest()
                return
            payload = wire.encode_compact_block(self._config.chain_id, compact, commit)
            self._latest_compact = (commit.height, payload)
        self._send("block", self._latest_compact[1], None)

    def _retry_compact(self) -> None:
        for key, (msg, sender) in list(self._pending_compact.items()):
            if self.stopped or msg.proposal.height != self.height:
                self._pending_compact.pop(key, None)
                continue
            self._expand(msg, key, sender)

    def _ask_full(self, key: bytes, height: int) -> None:
        """Still missing txs after the wait: ask the proposal's sender for the whole block."""
        pending = self._pending_compact.get(key)
        if pending is None or self.stopped or self.height != height or not pending[1]:
            return
        msg, sender = pending
        request = wire.encode_proposal_request(
            self._config.chain_id, height, msg.proposal.round, self._clock.now_ms()
        )
        self.stats["proposal_requested"] += 1
        self._send("consensus", request, sender)

    def _answer_proposal_request(self, req: wire.ProposalRequest, sender: str) -> None:
        """Send our full proposal of (height, round) to ``sender``: at most once per
        ``republish_ms`` per requester and round (the request is not signed)."""
        payload = self._own.get((req.height, req.round, int(Step.PROPOSE)))
        if not self.is_validator or req.height != self.height or payload is None or not sender:
            self.stats["proposal_request_ignored"] += 1
            return
        now = self._clock.now_ms()
        last = self._answered.get((sender, req.round))
        if last is not None and now - last < self._config.republish_ms:
            self.stats["proposal_request_limited"] += 1
            return
        self._answered[(sender, req.round)] = now
        self.stats["proposal_answered"] += 1
        self._send("consensus", payload, sender)

    def _wire_form(self, hrs: tuple[int, int, int], payload: bytes) -> bytes:
        """What an own message looks like on the wire: a proposal in compact form when the
        application has one (the WAL and answers to requests keep the full payload)."""
        if self._compact is None or hrs[2] != int(Step.PROPOSE):
            return payload
        cached = self._own_wire.get(hrs)
        if cached is None:
            msg = wire.decode(self._config.chain_id, payload)
            assert isinstance(msg, Proposal)
            compact = self._compact.compact_block(msg.block)
            cached = payload
            if compact is not None:
                cached = wire.encode_compact_proposal(self._config.chain_id, msg, compact)
                self._remember(sha256(cached))
            self._own_wire[hrs] = cached
        return cached
