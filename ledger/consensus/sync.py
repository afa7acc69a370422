"""Following decided blocks: announcements, block sync, fork detection.

Spec: docs/spec/consensus.md §Block sync and members. A node applies a block it did not decide
itself only with a commit that :func:`verify_commit` accepts under the validator set of that
height, and a block the application finds valid. Members (non-validators) advance only this
way; validators use it to catch up after being away.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from ledger import codec
from ledger.consensus import wire
from ledger.consensus.app import ConsensusApp
from ledger.consensus.clock import Clock
from ledger.consensus.commit import block_time_ms, verify_commit
from ledger.consensus.crash import BLOCK_STORED, NO_CRASH, CrashPoints
from ledger.consensus.errors import CommitError, ForkError, StoreError
from ledger.consensus.messages import Commit
from ledger.consensus.validators import ValidatorSet
from ledger.consensus.wal import ConsensusStore

if TYPE_CHECKING:
    from ledger.consensus.engine import EngineConfig, Send

MAX_PENDING_BLOCKS = 64
"""Out-of-order sync answers kept until their height comes up."""

MAX_PROPOSER_ROUNDS = 64
"""Rounds searched for a re-proposed or decided block's named proposer (the core ignores
messages more than 64 rounds ahead, so a decision beyond cannot come from this node's set)."""


def encode_pruned(
    chain_id: str, from_height: int, tip: int, tip_commit: codec.Value = None
) -> bytes:
    """``["sync_pruned", chain, from_height, tip, tip_commit]``: this node cannot send block
    ``from_height`` whole; its decided tip is ``tip``, and ``tip_commit`` (the commit of that
    block, :meth:`Commit.to_value`, or nil) lets the requester verify that the chain is ahead
    of it. The message itself is unsigned: a node acts on it only when verified messages show
    it behind (ledger/node.py), and the snapshot it leads to is verified too
    (docs/spec/consensus.md §5b)."""
    return codec.encode(["sync_pruned", chain_id, from_height, tip, tip_commit])


class BlockFollower:
    """Height bookkeeping shared by validators and members; applies verified blocks."""

    def __init__(
        self,
        config: EngineConfig,
        app: ConsensusApp,
        clock: Clock,
        send: Send,
        store: ConsensusStore,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        self._config = config
        self.app = app
        self._clock = clock
        self._send = send
        self.store = store
        self._crash_follow = crash
        self.stats: Counter[str] = Counter()
        self.stopped = False
        self._last_sync_ms = -(1 << 62)
        self._known_tip = 0
        """Highest height peers are known to have decided (from messages of later heights)."""
        self._sync_retry_armed = False
        self._pending_blocks: dict[int, wire.BlockAnnouncement] = {}
        self.height = app.height() + 1
        self.valset = self._load_valset()
        self.prev_valset = store.load_valset(self.height - 1)
        self.last_commit = store.load_commit(self.height - 1)
        self.last_block: bytes | None = None
        self.height_time_ms = self._height_time()

    def _height_time(self) -> int:
        """BFT time of the block decided at this height [ms] (docs/spec/consensus.md §Time):
        the weighted median of the last commit, or the genesis time + 1 ms at height 1."""
        if self.last_commit is not None and self.prev_valset is not None:
            return block_time_ms(self.last_commit, self.prev_valset)
        return self.app.last_block_time_ms() + 1

    def _load_valset(self) -> ValidatorSet:
        stored = self.store.load_valset(self.height)
        if stored is not None:
            return stored
        if self.height == 1:
            vs = ValidatorSet.from_powers(self.app.validators())
        else:
            prev = self.store.load_valset(self.height - 1)
            if prev is None:
                raise StoreError(
                    f"no validator set for height {self.height - 1}: the consensus store "
                    "does not belong to this application state"
                )
            vs = prev.next_height(self.app.validators())
        self.store.save_valset(self.height, vs)
        return vs

    def entered_height(self) -> None:
        """Hook: the height advanced (the engine builds a new core)."""

    # ----------------------------------------------------------------- applying

    def apply_block(self, block: bytes, commit: Commit) -> None:
        """Commit a decided block and advance to the next height."""
        self.store.save_commit(commit)
        self.app.commit_block(block, commit)
        self._crash_follow.hit(BLOCK_STORED)
        self.stats["blocks"] += 1
        self.prev_valset, self.last_commit, self.last_block = self.valset, commit, block
        self.height_time_ms = block_time_ms(commit, self.valset)
        self.height += 1
        self.valset = self.prev_valset.next_height(self.app.validators())
        # Unsynced: after a power cut it is derived again from the synced set of the last height.
        self.store.save_valset(self.height, self.valset, sync=False)
        self.entered_height()
        self._drain_pending()

    def _drain_pending(self) -> None:
        """Apply a buffered block of the new height, however this height was reached."""
        self._pending_blocks = {h: a for h, a in self._pending_blocks.items() if h >= self.height}
        ann = self._pending_blocks.pop(self.height, None)
        if ann is not None and not self.stopped:
            self._apply_verified(ann)

    def on_block(self, ann: wire.BlockAnnouncement) -> None:
        """A decided block with its commit arrived (announcement or sync answer)."""
        height = ann.commit.height
        if height < self.height:
            self._check_fork(ann)
            return
        if height > self.height:
            if len(self._pending_blocks) < MAX_PENDING_BLOCKS:
                self._pending_blocks.setdefault(height, ann)
            self.note_peer_height(height)
            return
        self._apply_verified(ann)  # then apply_block drains buffered later blocks

    def _apply_verified(self, ann: wire.BlockAnnouncement) -> bool:
        block_hash = self.app.block_id(ann.block)
        try:
            verify_commit(self._config.chain_id, self.valset, self.height, block_hash, ann.commit)
        except CommitError:
            self.stats["bad_commit"] += 1
            return False
        if not self.proposer_field_ok(ann.block, ann.commit.round):
            self.stats["wrong_block_proposer"] += 1
            return False
        if not self.app.validate_block(self.height, ann.block):
            # More than 1/3 signed an invalid block: refuse it (this node halts here).
            self.stats["invalid_committed_block"] += 1
            return False
        self.stats["followed"] += 1
        self.apply_block(ann.block, ann.commit)
        return True

    def proposer_field_ok(self, block: bytes, last_round: int, fresh: bytes | None = None) -> bool:
        """Whether the block names a proposer it may name (docs/spec/consensus.md §4).

        A fresh proposal (``fresh`` = its signer, the round's proposer) must name that
        signer. A re-proposal carries a block first proposed in a round up to its
        ``pol_round``, a decided block one proposed in a round up to the commit's round:
        the block must name the proposer of one of the rounds ``0..last_round``.
        """
        named = self.app.block_proposer(block)
        if named is None:
            return True  # the block format names none (the simulation app)
        if fresh is not None:
            return named == fresh
        rounds = range(min(last_round, MAX_PROPOSER_ROUNDS) + 1)
        return any(named == self.valset.proposer(r) for r in rounds)

    def _check_fork(self, ann: wire.BlockAnnouncement) -> None:
        """Two valid commits for one height mean > 1/3 equivocated: stop, never diverge."""
        self._fork_if_conflicting(ann.commit, self.app.block_id(ann.block))

    def _fork_if_conflicting(self, commit: Commit, block_hash: bytes) -> None:
        height = commit.height
        mine = self.store.load_commit(height)
        if mine is None or mine.block_hash == commit.block_hash:
            self.stats["old_block"] += 1
            return
        valset = self.store.load_valset(height)
        if valset is None:
            return
        try:
            verify_commit(self._config.chain_id, valset, height, block_hash, commit)
        except CommitError:
            self.stats["bad_commit"] += 1
            return
        self.stopped = True
        self.stats["fork_detected"] += 1
        raise ForkError(height, (mine.block_hash, commit.block_hash))

    @property
    def is_behind(self) -> bool:
        """True when verified messages (a validator's signed proposal or vote of a later
        height, a commit that verifies) showed that this node's height is decided elsewhere."""
        return self.height <= self._known_tip

    def on_tip(self, tip: wire.Tip) -> None:
        """A peer's idle re-announcement of its latest commit (no block: a few hundred bytes).

        Verified against this node's current validator set before it counts: a commit for a
        height this node lacks makes it ask for blocks (and keep asking until it has them); one
        for a decided height with another block is a fork.
        """
        commit = tip.commit
        if commit.height < self.height:
            self._fork_if_conflicting(commit, commit.block_hash)
            return
        try:
            verify_commit(
                self._config.chain_id, self.valset, commit.height, commit.block_hash, commit
            )
        except CommitError:
            self.stats["bad_tip"] += 1
            return
        self.stats["tips_ahead"] += 1
        self.note_peer_height(commit.height)

    # ----------------------------------------------------------------- gossip

    def announce_latest(self) -> None:
        """Publish the last decided block with its commit (helps peers one height behind)."""
        if self.last_commit is None:
            return
        if self.last_block is None:
            self.last_block = self.app.block(self.height - 1)
            if self.last_block is None:
                return
        payload = wire.encode_block(self._config.chain_id, self.last_block, self.last_commit)
        self._send("block", payload, None)

    def note_peer_height(self, decided: int) -> None:
        """Peers have decided up to ``decided``: ask for blocks, and keep asking (every
        ``sync_retry_ms``) until this node has them — one lost request or answer must not
        leave it behind on an idle chain."""
        self._known_tip = max(self._known_tip, decided)
        self.request_sync()

    def request_sync(self) -> None:
        """Ask peers for blocks from this height on (at most once per ``sync_retry_ms``; a
        suppressed request is retried at the end of the window while peers are known ahead)."""
        now = self._clock.now_ms()
        if now - self._last_sync_ms < self._config.sync_retry_ms:
            self._arm_sync_retry()
            return
        self._last_sync_ms = now
        if self.height <= self._known_tip:
            self._arm_sync_retry()
        self.stats["sync_requests"] += 1
        self._send(
            "sync_req", wire.encode_sync_request(self._config.chain_id, self.height, now), None
        )

    def _arm_sync_retry(self) -> None:
        if self._sync_retry_armed:
            return
        self._sync_retry_armed = True

        def retry() -> None:
            self._sync_retry_armed = False
            if not self.stopped and self.height <= self._known_tip:
                self.request_sync()

        self._clock.call_later(self._config.sync_retry_ms, retry)

    def answer_sync(self, from_height: int, requester: str) -> None:
        """Send ``requester`` up to ``sync_batch`` decided blocks from ``from_height`` on."""
        if not requester:
            return
        last = min(from_height + self._config.sync_batch, self.height)
        for height in range(from_height, last):
            block = self.app.block(height)
            commit = self.store.load_commit(height)
            if block is None and height == from_height:
                # Body-pruned here (or below a restored snapshot): the requester cannot replay
                # it and should join by snapshot (docs/spec/consensus.md §5b).
                self.stats["sync_pruned"] += 1
                tip_commit = self.store.load_commit(self.height - 1)
                payload = encode_pruned(
                    self._config.chain_id,
                    height,
                    self.height - 1,
                    None if tip_commit is None else tip_commit.to_value(),
                )
                self._send("sync_resp", payload, requester)
                return
            if block is None or commit is None:
                break
            self.stats["sync_served"] += 1
            payload = wire.encode_block(self._config.chain_id, block, commit)
            self._send("sync_resp", payload, requester)
