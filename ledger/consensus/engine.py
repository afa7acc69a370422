"""The consensus engine: drives :class:`HeightState` from messages, timers and the application.

Spec: docs/spec/consensus.md §1 (layers), §7. Single-threaded and synchronous: the owner calls
:meth:`Engine.receive` for every transport message and the clock calls back timers; the engine
sends through the ``send`` callable. This keeps it deterministic under a virtual clock; the
asyncio node (ledger/node.py) feeds it from one bounded queue.

Order of effects for an own message (it never double-signs, also across crashes): sign-state
persists → WAL records → publish → the core counts it.

This module is the message path: a received message is deduplicated, decoded, checked and fed
to the core; the core's actions are signed, persisted, published, armed as timeouts, reported
as evidence or applied as a decision; a restart replays the WAL through the same path. The
height as a whole (entering it, holding messages of later heights, starting it, re-publication
and the idle tip) is :class:`ledger.consensus.heights.HeightLifecycle`; compact wire forms are
:mod:`ledger.consensus.compact`, block following and sync :mod:`ledger.consensus.sync`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.consensus import wire
from ledger.consensus.app import ConsensusApp
from ledger.consensus.clock import Clock
from ledger.consensus.compact import CompactBlocks
from ledger.consensus.core import (
    Action,
    DecideAction,
    EquivocationAction,
    ProposeAction,
    TimeoutAction,
    TimeoutConfig,
    VoteAction,
)
from ledger.consensus.crash import NO_CRASH, PERSISTED_NOT_SENT, CrashPoints
from ledger.consensus.errors import DoubleSignError, MessageError, StoreError
from ledger.consensus.evidence import Evidence
from ledger.consensus.heights import HeightLifecycle
from ledger.consensus.messages import Commit, Proposal, Step, Vote
from ledger.consensus.privval import SignState
from ledger.consensus.validators import ValidatorSet
from ledger.consensus.wal import ConsensusStore
from ledger.keys import SigningKey, sha256

SYNC_RESPONDERS = 2
"""Validators answering one sync request."""

MAX_REPORTED = 1024
"""Evidence keys remembered as already reported (oldest first out) [count]."""

Send = Callable[[str, bytes, str | None], None]
"""``send(channel, payload, to)``: publish on a transport channel (``to`` None: broadcast)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine parameters (docs/spec/consensus.md §Parameters).

    Attributes:
        chain_id: the chain this node belongs to.
        timeouts: per-step timeouts [ms].
        heartbeat_ms: an empty block is made after this long without transactions [ms]; slow
            by default (a metered 4G link pays for every empty block; liveness never waits
            for it: txs start a height at once, and laggards learn from ``tip_ms``).
        tip_ms: while the chain idles, one validator per period (rotating) re-publishes the
            latest block and commit, so a node that missed a decision learns it is behind
            [ms].
        republish_ms: period of re-publishing own votes and the latest commit while a height
            is undecided [ms].
        sync_retry_ms: minimum spacing of block-sync requests [ms].
        sync_batch: blocks answered per sync request.
        future_heights: consensus messages up to this many heights ahead are buffered.
        future_buffer: bound on buffered future-height messages (older ones win).
        dedup_size: payload hashes of the current height remembered to drop duplicates (the
            set is emptied when a height is entered: an older height's message is refused by
            one height comparison after decoding, before any signature check).
        compact_proposals: send proposals in the application's compact form when it has one.
        compact_wait_ms: a compact proposal whose txs are not all here yet waits this long
            for them (tx gossip may trail the proposal) before the full one is asked for [ms].
    """

    chain_id: str
    timeouts: TimeoutConfig = field(default_factory=TimeoutConfig)
    heartbeat_ms: int = 900_000
    tip_ms: int = 300_000
    republish_ms: int = 2_000
    sync_retry_ms: int = 2_000
    sync_batch: int = 16
    future_heights: int = 2
    future_buffer: int = 1024
    dedup_size: int = 8192
    compact_proposals: bool = True
    compact_wait_ms: int = 250


class Engine(HeightLifecycle):
    """One node's consensus: a validator when its key is in the height's set, else a follower.

    Args:
        config: parameters.
        app: the application port.
        clock: time source and timer scheduler.
        send: publishes a payload on a channel.
        store: the consensus store (WAL, validator sets, seen commits).
        key: this node's signing key (None: a member that never signs).
        sign_state: the sign-state guarding ``key`` (required with a key).
        crash: injected crash points (tests).
    """

    def __init__(
        self,
        config: EngineConfig,
        app: ConsensusApp,
        clock: Clock,
        send: Send,
        store: ConsensusStore,
        *,
        key: SigningKey | None = None,
        sign_state: SignState | None = None,
        crash: CrashPoints = NO_CRASH,
    ) -> None:
        if key is not None and sign_state is None:
            raise StoreError("a signing key needs a sign-state")
        super().__init__(config, app, clock, send, store, crash)
        self.key = key
        self._sign_state = sign_state
        self._crash = crash
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._own: dict[tuple[int, int, int], bytes] = {}
        self._init_compact(app, config.compact_proposals)
        self._reported: OrderedDict[bytes, None] = OrderedDict()
        self._replaying = False
        self._init_heights()

    # ----------------------------------------------------------------- lifecycle

    @property
    def is_validator(self) -> bool:
        """Whether this node votes at the current height."""
        return self.key is not None and self.key.public_key in self.valset

    def start(self) -> None:
        """Resume the current height from the WAL, ask peers for blocks decided meanwhile
        (an idle chain sends nothing that would reveal them), then run timers."""
        self._replay()
        self.request_sync()
        for probe in (1, 2):  # other responders each time (see _is_sync_responder)
            self._clock.call_later(probe * self._config.sync_retry_ms, self._probe_sync)
        self._arm_height()
        self._republish_timer = self._clock.call_later(self._config.republish_ms, self._republish)

    def _probe_sync(self) -> None:
        if not self.stopped:
            self.request_sync()

    def stop(self) -> None:
        """Stop reacting (pending timers become no-ops; the owner closes stores)."""
        if self._republish_timer is not None:
            self._republish_timer.cancel()
        self.stopped = True

    def notify_tx(self) -> None:
        """The mempool admitted a transaction: start the height if it waits, and rebuild a
        compact proposal that was waiting for txs."""
        if self.stopped:
            return
        if self._pending_compact:
            self._retry_compact()
        if self.is_validator and not self.core.started:
            self._start_height()

    def sync_now(self) -> None:
        """The transport (re)connected: ask for missed blocks at once, bypassing the
        request spacing (what was sent while the link was down may be lost)."""
        if self.stopped:
            return
        self._last_sync_ms = -(1 << 62)
        self.request_sync()

    # ----------------------------------------------------------------- input

    def receive(self, channel: str, sender: str, payload: bytes) -> None:
        """Handle one transport message (any channel but ``tx``)."""
        if self.stopped:
            return
        if channel in ("consensus", "sync_req"):
            # Blocks are not deduplicated: a copy that came too early must stay usable, and an
            # old one is refused by one hash comparison.
            digest = sha256(payload)
            if digest in self._seen:
                self.stats["duplicate"] += 1
                return
            self._remember(digest)
        try:
            msg = wire.decode(self._config.chain_id, payload)
        except MessageError as exc:
            self.stats[exc.reason] += 1
            return
        if isinstance(msg, Vote | Proposal):
            if channel == "consensus":
                self._on_consensus(msg, payload)
        elif isinstance(msg, wire.CompactProposal):
            if channel == "consensus":
                self._on_compact(msg, payload, sender)
        elif isinstance(msg, wire.ProposalRequest):
            if channel == "consensus":
                self._answer_proposal_request(msg, sender)
        elif isinstance(msg, wire.BlockAnnouncement):
            self.on_block(msg)
        elif isinstance(msg, wire.CompactAnnouncement):
            self._on_compact_block(msg)
        elif isinstance(msg, wire.Tip):
            self.on_tip(msg)
        elif self._is_sync_responder(msg.time_ms):
            self.answer_sync(msg.from_height, sender)

    def _is_sync_responder(self, request_ms: int) -> bool:
        """Two validators answer a sync request, chosen by its time: each retry asks others
        (all n answering would send n copies of every block)."""
        if not self.is_validator or self.key is None:
            return False
        keys = [v.pubkey for v in self.valset.validators]
        # Hashed, not the time itself: retries every k·n ms would pick the same pair forever.
        start = int.from_bytes(sha256(request_ms.to_bytes(8, "big"))[:8], "big")
        offset = (keys.index(self.key.public_key) - start) % len(keys)
        return offset < SYNC_RESPONDERS

    def _on_consensus(self, msg: Vote | Proposal, payload: bytes) -> None:
        if not self.is_validator:
            self.stats["not_validating"] += 1
            return
        if msg.height < self.height:
            # Late votes of a height just decided are normal; a real laggard asks for blocks
            # itself (each re-publication period while its height is open).
            self.stats["old_height"] += 1
            return
        if msg.height > self.height:
            self._buffer_future(msg.height, payload, "")
            # Verified first: a forged far height would make this node ask again and again.
            if _signer(msg) in self.valset and self._verified(msg):
                self.note_peer_height(msg.height - 1)
            return
        signer = _signer(msg)
        if signer not in self.valset:
            self.stats["not_validator"] += 1
            return
        if not self._verified(msg):
            return
        if isinstance(msg, Proposal) and not self._named_proposer_ok(msg):
            self.stats["wrong_block_proposer"] += 1
            return
        if not self._replaying:
            own = self.key is not None and signer == self.key.public_key
            self.store.wal_append(self.height, ["msg", payload], sync=own)
            if not own:
                self._heard_ms = self._clock.now_ms()
        self._feed(msg)

    def _named_proposer_ok(self, msg: Proposal) -> bool:
        fresh = msg.proposer if msg.pol_round < 0 else None
        return self.proposer_field_ok(msg.block, msg.pol_round, fresh)

    def _verified(self, msg: Vote | Proposal) -> bool:
        """Check the signature (and a proposal's block id); count a failure by its reason."""
        try:
            if isinstance(msg, Proposal):
                msg.verify(self._config.chain_id, self.app.block_id)
            else:
                msg.verify(self._config.chain_id)
        except MessageError as exc:
            self.stats[exc.reason] += 1
            return False
        return True

    def _feed(self, msg: Vote | Proposal) -> None:
        actions = self.core.on_vote(msg) if isinstance(msg, Vote) else self.core.on_proposal(msg)
        if not self.core.started and self.core.decision is None:
            # A validator is working on this height (it has transactions we may lack): join.
            actions += self._start_actions()
        self._perform(actions)

    # ----------------------------------------------------------------- actions

    def _perform(self, actions: list[Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, VoteAction | ProposeAction):
                queue.extend(self._sign_and_send(action))
            elif isinstance(action, TimeoutAction):
                self._arm_timeout(action)
            elif isinstance(action, EquivocationAction):
                self._report(Evidence(action.first, action.second))
            elif isinstance(action, DecideAction):
                self._decide(action)
                return  # the height changed: leftover actions belong to the old core

    def _sign_and_send(self, action: VoteAction | ProposeAction) -> list[Action]:
        hrs = (self.height, action.round, int(_step_of(action)))
        payload = self._own.get(hrs)
        if payload is None:
            try:
                msg = self._sign(action)
            except DoubleSignError:
                self.stats["sign_refused"] += 1
                return []
            payload = self._encode(msg)
            self._own[hrs] = payload
            self.store.wal_append(self.height, ["msg", payload], sync=True)
            self._crash.hit(PERSISTED_NOT_SENT)
        self._send("consensus", self._wire_form(hrs, payload), None)
        self._remember(sha256(payload))
        sent = wire.decode(self._config.chain_id, payload)
        if isinstance(sent, Vote):
            return self.core.on_vote(sent)
        assert isinstance(sent, Proposal)
        return self.core.on_proposal(sent)

    def _sign(self, action: VoteAction | ProposeAction) -> Vote | Proposal:
        assert self.key is not None
        assert self._sign_state is not None
        # Vote times exceed this height's block time, so the next block's time advances.
        now = max(self._clock.now_ms(), self.height_time_ms + 1)
        me = self.key.public_key
        if isinstance(action, VoteAction):
            vote = Vote(action.step, self.height, action.round, action.block_hash, now, me)
            return self._sign_state.sign_vote(self.key, self._config.chain_id, vote)
        proposal = Proposal(
            self.height,
            action.round,
            action.pol_round,
            self.app.block_id(action.block),
            now,
            me,
            action.block,
        )
        return self._sign_state.sign_proposal(self.key, self._config.chain_id, proposal)

    def _encode(self, msg: Vote | Proposal) -> bytes:
        if isinstance(msg, Vote):
            return wire.encode_vote(self._config.chain_id, msg)
        return wire.encode_proposal(self._config.chain_id, msg)

    def _arm_timeout(self, action: TimeoutAction) -> None:
        height = self.height

        def fire() -> None:
            if self.height != height or self.stopped:
                return
            # Not synced: a lost timeout record only means the timeout fires again after a restart.
            self.store.wal_append(height, ["timeout", int(action.step), action.round], sync=False)
            self._perform(self.core.on_timeout(action.step, action.round))

        self._clock.call_later(action.delay_ms, fire)

    def _remember(self, digest: bytes) -> None:
        """Note a payload digest as seen; oldest first out beyond ``dedup_size`` [count]."""
        self._seen[digest] = None
        while len(self._seen) > self._config.dedup_size:
            self._seen.popitem(last=False)

    def _report(self, evidence: Evidence) -> None:
        self.stats["equivocation"] += 1
        if evidence.key not in self._reported:
            self._reported[evidence.key] = None
            # Only against re-reporting the same equivocation while its messages still arrive;
            # 1,024 keys span far more heights than votes keep being re-published.
            while len(self._reported) > MAX_REPORTED:
                self._reported.popitem(last=False)
            self.app.report_evidence(evidence)

    def _decide(self, action: DecideAction) -> None:
        announce = self._is_announcer(action.round)
        self.apply_block(action.block, action.commit)
        if announce:
            compact = self._compact.compact_block(action.block) if self._compact else None
            if compact is None:
                payload = wire.encode_block(self._config.chain_id, action.block, action.commit)
            else:
                payload = wire.encode_compact_block(self._config.chain_id, compact, action.commit)
            self._send("block", payload, None)

    def _is_announcer(self, round_: int) -> bool:
        """Two validators publish each decision (block + commit, the largest message): the
        deciding round's proposer and the next key after it. n announcements per block would
        cost n× the bytes on metered links; a node that misses both syncs."""
        if self.key is None:
            return False
        keys = [v.pubkey for v in self.valset.validators]
        proposer = self.valset.proposer(round_)
        successor = keys[(keys.index(proposer) + 1) % len(keys)]
        return self.key.public_key in (proposer, successor)

    # ----------------------------------------------------------------- crash recovery

    def _replay(self) -> None:
        """Feed the WAL of the current height back into a fresh core (crash recovery)."""
        records = self.store.wal_records(self.height)
        for record in records:
            # Own messages first: a replayed step re-sends what was signed, never re-signs.
            if record[0] == "msg":
                own = wire.decode(self._config.chain_id, record[1])
                if not isinstance(own, Vote | Proposal) or self.key is None:
                    continue
                if _signer(own) == self.key.public_key:
                    self._own[(own.height, own.round, int(_step_of_msg(own)))] = record[1]
        self._replaying = True
        try:
            height = self.height
            for record in records:
                if self.height != height:
                    break  # decided during replay: the rest belongs to the finished height
                if record[0] == "start":
                    self._perform(self.core.start())
                elif record[0] == "timeout":
                    self._perform(self.core.on_timeout(Step(record[1]), record[2]))
                elif record[0] == "msg":
                    msg = wire.decode(self._config.chain_id, record[1])
                    if isinstance(msg, Vote | Proposal):
                        self._on_consensus(msg, record[1])
                self.stats["wal_replayed"] += 1
        finally:
            self._replaying = False


def _step_of(action: VoteAction | ProposeAction) -> Step:
    return action.step if isinstance(action, VoteAction) else Step.PROPOSE


def _step_of_msg(msg: Vote | Proposal) -> Step:
    return msg.step if isinstance(msg, Vote) else Step.PROPOSE


def _signer(msg: Vote | Proposal) -> bytes:
    return msg.validator if isinstance(msg, Vote) else msg.proposer


__all__ = ["Commit", "CompactBlocks", "Engine", "EngineConfig", "Send", "ValidatorSet"]
